"""Tiny random-init image-text models for the tests, saved as the folders users bring: an open_clip ``local-dir``
(config + weights) and a Hugging Face CLIP folder with a word-level tokenizer (``save_pretrained``), so that the
commands load them offline exactly as they load real ones."""

from __future__ import annotations

import json
from pathlib import Path

import torch

IMG = 32
WORDS = "a photo of dog cat car the golden retriever cheeseburger".split()


def open_clip_model(bias: bool = False) -> torch.nn.Module:
    """A tiny open_clip CLIP (a ViT tower, a text transformer); ``bias``: with SigLIP's logit bias."""
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    torch.manual_seed(3)
    text = CLIPTextCfg(context_length=77, vocab_size=49408, width=32, heads=2, layers=1)  # the real tokenizer
    vision = CLIPVisionCfg(layers=2, width=32, head_width=16, patch_size=8, image_size=IMG)
    return CLIP(16, vision, text, init_logit_bias=-10 if bias else None).eval()


def open_clip_folder(root):
    """An open_clip ``local-dir`` folder (config + weights) of a tiny random-init CLIP."""
    from safetensors.torch import save_file

    cfg = {"embed_dim": 16, "vision_cfg": {"image_size": IMG, "layers": 2, "width": 32, "head_width": 16,
                                           "patch_size": 8},
           "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
    (root / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg}))
    model = open_clip_model()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(root / "open_clip_model.safetensors"))
    return root


def hf_clip_folder(root: Path, image_size: int = 48, processor: bool = False) -> Path:
    """A Hugging Face ``CLIPModel`` folder (``config.json``, ``model.safetensors``, a word-level tokenizer) whose
    vision tower takes ``image_size`` px; ``processor``: with a ``preprocessor_config.json`` at that size."""
    import transformers as tf
    from tokenizers import Tokenizer, models, pre_tokenizers

    common = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
    vocab = {"[UNK]": 0, "[PAD]": 1, **{w: i + 2 for i, w in enumerate(WORDS)}}
    cfg = tf.CLIPConfig(text_config=dict(vocab_size=len(vocab), max_position_embeddings=16, bos_token_id=0,
                                         eos_token_id=2, pad_token_id=1, **common),  # 2: the legacy pooling
                        vision_config=dict(image_size=image_size, patch_size=8, **common), projection_dim=16)
    torch.manual_seed(5)
    tf.CLIPModel(cfg).eval().save_pretrained(root)
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tf.PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="[UNK]", pad_token="[PAD]").save_pretrained(root)
    if processor:
        (root / "preprocessor_config.json").write_text(json.dumps({
            "do_resize": True, "size": {"shortest_edge": image_size}, "do_center_crop": True,
            "crop_size": {"height": image_size, "width": image_size}, "image_mean": [0.5, 0.5, 0.5],
            "image_std": [0.5, 0.5, 0.5], "resample": 3}))
    return root
