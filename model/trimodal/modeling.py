"""The whole trimodal network as a transformers model: save/from_pretrained (safetensors), generate(), Auto*.

    encoder (TrimodalEncoder): vision / text / audio encoders -> MultimodalFusion -> ReasoningCore -> R
    TrimodalForConditionalGeneration: encoder + GenerativeDecoder (LM head) + ClassificationHead
                                      + the heads and projections the pre-training objectives use

Inputs (any non-empty subset of modalities per sample; a batch may mix subsets):
    pixel_values [B, 3, S, S] in [0, 1], image_present [B] bool
    input_features [B, n_mels, T] log-Mel, mel_lengths [B] (0 = no audio)
    text_ids [B, L], text_mask [B, L] bool (an all-False row = no text)
The generative decoder follows the encoder-decoder pattern of VisionEncoderDecoderModel: generate() runs the
encoder once and decodes from R with greedy, beam or sampling search.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, AutoModelForSeq2SeqLM, GenerationMixin, PreTrainedModel
from transformers.cache_utils import DynamicCache, EncoderDecoderCache
from transformers.modeling_outputs import ModelOutput

from trimodal.model import lockstep
from trimodal.model.layers import masked_mean, on_present
from trimodal.model.losses import cross_entropy, weighted_sum
from trimodal.model.trimodal.configuration import TrimodalConfig
from trimodal.model.trimodal.decoders import ClassificationHead, GenerativeDecoder
from trimodal.model.trimodal.fusion import MultimodalFusion, Stream
from trimodal.model.trimodal.pretrained import build_encoders
from trimodal.model.trimodal.reasoning import ReasoningCore
from trimodal.model.trimodal.vision import VisionEncoder


@dataclass
class TrimodalEncoderOutput(ModelOutput):
    last_hidden_state: torch.Tensor | None = None  # R [B, sum L, d_model]
    attention_mask: torch.Tensor | None = None  # [B, sum L] bool
    unimodal: dict | None = None  # modality -> encoder output before fusion [B, L, d_model]
    unimodal_masks: dict | None = None
    segments: dict | None = None  # modality -> slice of R


@dataclass
class TrimodalOutput(ModelOutput):
    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None  # decoder LM logits [B, T, vocab]
    class_logits: torch.Tensor | None = None  # [B, num_classes]
    encoder_last_hidden_state: torch.Tensor | None = None
    encoder_attention_mask: torch.Tensor | None = None
    past_key_values: EncoderDecoderCache | None = None  # the decoder's KV cache during generation


class TrimodalPreTrainedModel(PreTrainedModel):
    config_class = TrimodalConfig
    base_model_prefix = "trimodal"
    main_input_name = "pixel_values"
    supports_gradient_checkpointing = True  # the blocks below (trainer.activation_checkpointing)
    # the blocks FSDP shards one by one (trimodal/training/distributed.py); a GatedCrossAttention is fusion's
    _no_split_modules = ["EncoderBlock", "DecoderBlock", "ConformerBlock", "GatedCrossAttention"]

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, nn.Linear) and hasattr(module, "opening"):  # a GatedCrossAttention's gate
            nn.init.zeros_(module.weight)
            nn.init.constant_(module.bias, module.opening)
        elif isinstance(module, nn.Linear | nn.Conv1d | nn.Conv2d):
            nn.init.normal_(module.weight, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=std)
            if module.padding_idx is not None:
                module.weight[module.padding_idx].zero_()
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        if isinstance(module, VisionEncoder):
            nn.init.normal_(module.pos, std=std)
            for conv in module.stem or ():  # PyTorch's default (Kaiming) init: at std 0.02 a conv stack starts dead
                if isinstance(conv, nn.Conv2d):
                    conv.reset_parameters()
        if isinstance(module, TrimodalForConditionalGeneration):
            nn.init.constant_(module.logit_scale, torch.log(torch.tensor(1 / 0.07)).item())


class TrimodalEncoder(nn.Module):
    """Encoders + fusion + reasoning core: raw inputs -> R (what generate() runs once)."""

    main_input_name = "pixel_values"

    def __init__(self, config: TrimodalConfig):
        super().__init__()
        self.config = config
        self.vision, self.text, self.audio = build_encoders(config)  # ours, or local transformers checkpoints
        self.fusion = MultimodalFusion(config)
        self.core = ReasoningCore(config)

    def streams(self, pixel_values=None, image_present=None, input_features=None, mel_lengths=None, text_ids=None,
                text_mask=None, patch_mask=None, frame_mask=None) -> dict[str, Stream]:
        """Each encoder runs on the samples that hold its modality only (a batch mixing subsets would otherwise
        encode the blank inputs of the others: ~40% of the encoders' work on the demo); the other samples' rows
        are zeros under a False mask, which nothing downstream reads. In lockstep (trimodal/model/lockstep.py) a
        modality some rank holds is a stream on every rank, all False where this rank's batch lacks it."""
        given = [x for x in (pixel_values, text_ids, input_features) if x is not None]
        if not given:
            raise ValueError("no input: pass at least one of pixel_values, input_features, text_ids")
        b, device = given[0].shape[0], given[0].device
        if pixel_values is not None and image_present is None:
            image_present = torch.ones(b, dtype=torch.bool, device=device)
        text_width = text_ids.shape[1] if text_ids is not None else 0
        if text_width and text_mask is None:
            text_mask = text_ids.ne(self.config.pad_token_id)
        frames = input_features.shape[-1] if input_features is not None else 0
        if frames and mel_lengths is None:
            mel_lengths = torch.full((b,), frames, device=device)
        image, text, audio = lockstep.needed(pixel_values is not None and bool(image_present.any()),
                                             text_width > 0 and bool(text_mask.any()),
                                             frames > 0 and bool(mel_lengths.gt(0).any()))
        streams = {}
        if image:
            hidden = on_present(self.vision, image_present, pixel_values, patch_mask)
            streams["image"] = Stream(hidden, image_present[:, None].expand(-1, hidden.shape[1]).contiguous())
        if text:
            if not text_width:  # this rank's batch has no text at all: one padding position, masked
                text_ids = torch.full((b, 1), self.config.pad_token_id, dtype=torch.long, device=device)
                text_mask = torch.zeros(b, 1, dtype=torch.bool, device=device)
            streams["text"] = Stream(on_present(self.text, text_mask.any(dim=-1), text_ids, text_mask), text_mask)
        if audio:
            if not frames:  # no audio in this rank's batch: silent frames of length 0 (the conv stem needs some)
                input_features = torch.zeros(b, self.config.n_mels, 16, device=device)
                mel_lengths, frame_mask = torch.zeros(b, dtype=torch.long, device=device), None
            hidden, mask = on_present(self.audio, mel_lengths.gt(0), input_features, mel_lengths, frame_mask)
            streams["audio"] = Stream(hidden, mask)
        if not streams:
            raise ValueError("no input: pass at least one of pixel_values, input_features, text_ids")
        return streams

    def forward(self, pixel_values=None, image_present=None, input_features=None, mel_lengths=None, text_ids=None,
                text_mask=None, patch_mask=None, frame_mask=None, return_dict=True, **kwargs) -> TrimodalEncoderOutput:
        return self.fuse(self.streams(pixel_values, image_present, input_features, mel_lengths, text_ids, text_mask,
                                      patch_mask, frame_mask))

    def fuse(self, streams: dict[str, Stream]) -> TrimodalEncoderOutput:
        """Unimodal streams -> fusion -> reasoning core -> R. Training steps that ask two things of the same
        media (a caption, then an answer to a question added to the text) encode image and audio once and
        fuse twice, with the text stream swapped (`streams(text_ids=...)`)."""
        h_multi, mask, segments = self.fusion(streams)
        empty = ~mask.any(dim=-1)
        if empty.any():
            raise ValueError(f"samples {empty.nonzero().flatten().tolist()} have no input modality")
        return TrimodalEncoderOutput(
            last_hidden_state=self.core(h_multi, mask), attention_mask=mask, segments=segments,
            unimodal={m: s.hidden for m, s in streams.items()}, unimodal_masks={m: s.mask for m, s in streams.items()})


class TrimodalForConditionalGeneration(TrimodalPreTrainedModel, GenerationMixin):
    _tied_weights_keys = {"decoder.lm_head.weight": "decoder.embed.weight"}

    def __init__(self, config: TrimodalConfig):
        super().__init__(config)
        c = config
        self.encoder = TrimodalEncoder(c)
        self.decoder = GenerativeDecoder(c)
        self.classifier = ClassificationHead(c)
        # pre-training heads on R's segments and the contrastive projections (docs/model.md "Objectives")
        self.mlm_head = nn.Linear(c.d_model, c.vocab_size)
        self.mim_head = nn.Linear(c.d_model, 2 ** c.mim_bits)
        self.mam_head = nn.Linear(c.d_model, 4 * c.n_mels)  # the 4 log-Mel frames behind a subsampled frame
        self.projections = nn.ModuleDict({m: nn.Linear(c.d_model, c.projection_dim, bias=False)
                                          for m in ("image", "text", "audio")})
        self.logit_scale = nn.Parameter(torch.zeros(3))  # log(1/tau) for itc, atc, vac
        self.itm_head = nn.Linear(c.d_model, 2)  # do the inputs belong together (objectives.matching_loss)
        self.post_init()

    def get_encoder(self, modality=None):
        return self.encoder

    def get_input_embeddings(self) -> nn.Module:
        return self.decoder.embed

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.decoder.embed = value

    def get_output_embeddings(self) -> nn.Module:
        return self.decoder.lm_head

    def global_embedding(self, encoder_output: TrimodalEncoderOutput, modality: str) -> torch.Tensor:
        """Pooled unimodal representation in the contrastive space ([B, projection_dim], not normalised)."""
        hidden, mask = encoder_output.unimodal[modality], encoder_output.unimodal_masks[modality]
        return self.projections[modality](masked_mean(hidden, mask))

    def forward(self, pixel_values=None, image_present=None, input_features=None, mel_lengths=None, text_ids=None,
                text_mask=None, decoder_input_ids=None, decoder_attention_mask=None, labels=None,
                class_labels=None, encoder_outputs=None, past_key_values=None, return_dict=True,
                **kwargs) -> TrimodalOutput:
        """labels: decoder targets [B, T] (-100 = ignore); decoder_input_ids default to labels shifted right."""
        if encoder_outputs is None:
            encoder_outputs = self.encoder(pixel_values, image_present, input_features, mel_lengths, text_ids,
                                           text_mask)
        memory, memory_mask = encoder_outputs.last_hidden_state, encoder_outputs.attention_mask
        if decoder_input_ids is None and labels is not None:
            decoder_input_ids = self.shift_right(labels)
        logits = None
        if decoder_input_ids is not None:
            logits = self.decoder(decoder_input_ids, memory, memory_mask, decoder_attention_mask, past_key_values)
        class_logits = self.classifier(memory, memory_mask)
        losses = {}
        if labels is not None:
            losses["ce"] = cross_entropy(logits, labels)
        if class_labels is not None:
            losses["cls"] = cross_entropy(class_logits[:, None], class_labels[:, None])
        loss = weighted_sum(losses, self.config.loss_weights) if losses else None
        return TrimodalOutput(loss=loss, logits=logits, class_logits=class_logits, encoder_last_hidden_state=memory,
                              encoder_attention_mask=memory_mask, past_key_values=past_key_values)

    def shift_right(self, labels: torch.Tensor) -> torch.Tensor:
        start = torch.full_like(labels[:, :1], self.config.decoder_start_token_id)
        shifted = torch.cat([start, labels[:, :-1]], dim=1)
        return shifted.masked_fill(shifted == -100, self.config.pad_token_id)

    @torch.no_grad()
    def generate(self, pixel_values=None, image_present=None, input_features=None, mel_lengths=None, text_ids=None,
                 text_mask=None, encoder_outputs=None, **kwargs):
        """generate() conditioned on any subset of modalities: the encoder runs once, the decoder searches with a
        KV cache (use_cache=False decodes the whole prefix every step: same tokens, slower)."""
        if encoder_outputs is None:
            encoder_outputs = self.encoder(pixel_values, image_present, input_features, mel_lengths, text_ids,
                                           text_mask)
        if kwargs.get("use_cache", True) and kwargs.get("past_key_values") is None:
            kwargs["past_key_values"] = EncoderDecoderCache(DynamicCache(), DynamicCache())
        return super().generate(encoder_outputs=encoder_outputs, **kwargs)

    def prepare_inputs_for_generation(self, input_ids, encoder_outputs=None, past_key_values=None, **kwargs):
        # with a cache, only the tokens it has not seen (the last one after the first step)
        if past_key_values is not None:
            input_ids = input_ids[:, past_key_values.get_seq_length():]
        return {"decoder_input_ids": input_ids, "encoder_outputs": encoder_outputs,
                "past_key_values": past_key_values}


AutoConfig.register(TrimodalConfig.model_type, TrimodalConfig, exist_ok=True)
AutoModel.register(TrimodalConfig, TrimodalForConditionalGeneration, exist_ok=True)
AutoModelForSeq2SeqLM.register(TrimodalConfig, TrimodalForConditionalGeneration, exist_ok=True)
