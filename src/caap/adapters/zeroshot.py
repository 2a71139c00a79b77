"""Image-text models as zero-shot classifiers: an image tower and the embeddings of text prompts.

    zs = ZeroShot.from_open_clip(model, ["a photo of a dog", "a photo of a cat"], tokenizer)
    zs = ZeroShot.from_transformers(model, prompts, tokenizer)        # CLIPModel, SiglipModel
    caap.CAAP(zs).explain(images, target=1)                            # "a photo of a cat"

``zs(images)`` gives logits ``[B, K]``, one per prompt: ``scale · cos(image, prompt_k) + bias`` with the model's
own ``logit_scale`` (exponentiated) and, for SigLIP, its ``logit_bias`` — the logits CLIP turns into a softmax over
the prompts and SigLIP into one sigmoid each (``kind``: ``"softmax"`` or ``"sigmoid"``, the probability a ``prob``
score should mean). Every method and metric works on it as on any classifier; its class names are the prompts.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from caap.errors import CaapError, OptionError

TEMPLATES = ("a photo of a {}.",)


def prompts_for(classes: Sequence[str], templates: Sequence[str] = TEMPLATES) -> list[list[str]]:
    """Per class, its prompts from ``templates`` (``"a photo of a {}."``): averaged into one embedding each."""
    if not classes:
        raise CaapError("no class names for the prompts; expected at least one")
    for t in templates:
        check_template(t)
    return [[t.format(c) for t in templates] for c in classes]


def check_template(template: str) -> str:
    """``template`` when it has exactly one ``{}`` (the class name) and no other ``str.format`` field; ``{{`` and
    ``}}`` stand for literal braces. Anything else is refused with one line naming the template."""
    import string

    try:
        fields = [(name, spec, conv) for _, name, spec, conv in string.Formatter().parse(template) if name is not None]
    except ValueError as exc:  # an unmatched brace: 'a {}}x{'
        raise OptionError("templates", f"{template!r}: {exc}; expected one {{}} for the class name ({{{{ and }}}} "
                                       "for literal braces)") from None
    if fields != [("", "", None)]:
        found = ", ".join("{" + n + (f"!{c}" if c else "") + (f":{s}" if s else "") + "}" for n, s, c in fields)
        raise OptionError("templates", f"{template!r} has {found or 'no field'}; expected exactly one {{}} for the "
                                       "class name ({{ and }} for literal braces)")
    return template


class ZeroShot(nn.Module):
    """A zero-shot classifier (see the module docstring).

    Args:
        tower: the image encoder, ``images [B, 3, H, W] -> embeddings [B, E]`` (open_clip's ``model.visual``, a
            Hugging Face CLIP/SigLIP model used as its image tower).
        text: prompt embeddings ``[K, E]`` (normalised here).
        scale: the logit scale (already exponentiated); bias: SigLIP's logit bias (None for CLIP).
        names: one name per prompt (the class names of the result).
    """

    def __init__(self, tower: nn.Module, text: torch.Tensor, scale: float | torch.Tensor,
                 bias: float | torch.Tensor | None = None, names: Sequence[str] | None = None) -> None:
        super().__init__()
        if text.dim() != 2 or text.shape[0] < 1:
            raise CaapError(f"text embeddings must be [K, E] with K >= 1, got {tuple(text.shape)}")
        self.tower = tower
        self.register_buffer("text", F.normalize(text.detach().float(), dim=-1))
        self.register_buffer("scale", torch.as_tensor(scale, dtype=torch.float32).detach().reshape(()))
        self.register_buffer("bias", None if bias is None else torch.as_tensor(bias, dtype=torch.float32).detach()
                             .reshape(()))
        self.names = list(names) if names is not None else [f"prompt {i}" for i in range(text.shape[0])]
        if len(self.names) != text.shape[0]:
            raise CaapError(f"{len(self.names)} names for {text.shape[0]} prompts")
        self.kind = "softmax" if bias is None else "sigmoid"

    def logits(self, embedding: torch.Tensor) -> torch.Tensor:
        """Image embeddings ``[B, E]`` -> logits ``[B, K]``."""
        out = F.normalize(embedding.float(), dim=-1) @ self.text.T * self.scale
        return out if self.bias is None else out + self.bias

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if hasattr(self.tower, "get_image_features"):  # a whole Hugging Face CLIP / SigLIP model
            out = self.tower.get_image_features(pixel_values=images)
        else:
            out = self.tower(images)
        if hasattr(out, "pooler_output"):  # a Hugging Face output object
            out = out.pooler_output
        return self.logits(out)

    @classmethod
    def from_open_clip(cls, model: nn.Module, prompts: Sequence[str] | Sequence[Sequence[str]], tokenizer=None,
                       tokens: torch.Tensor | None = None, names: Sequence[str] | None = None) -> ZeroShot:
        """From an open_clip model: ``prompts`` (one string per class, or a list per class, averaged) tokenised by
        ``tokenizer`` (open_clip's ``get_tokenizer(name)``), or already tokenised ``tokens`` ``[K, L]``."""
        groups = _groups(prompts)
        with torch.no_grad():
            if tokens is None:
                if tokenizer is None:
                    raise CaapError("from_open_clip needs a tokenizer (open_clip.get_tokenizer(NAME)) or tokens")
                text = torch.stack([F.normalize(model.encode_text(tokenizer(g)), dim=-1).mean(0) for g in groups])
            else:
                text = model.encode_text(tokens)
        bias = getattr(model, "logit_bias", None)
        return cls(model.visual, text, model.logit_scale.exp(), bias, names or [g[0] for g in groups])

    @classmethod
    def from_transformers(cls, model: nn.Module, prompts: Sequence[str] | Sequence[Sequence[str]] | None = None,
                          tokenizer=None, input_ids: torch.Tensor | None = None,
                          attention_mask: torch.Tensor | None = None, names: Sequence[str] | None = None) -> ZeroShot:
        """From a Hugging Face ``CLIPModel`` or ``SiglipModel``: ``prompts`` through ``tokenizer`` (its
        ``AutoTokenizer``; SigLIP pads to ``max_length`` as it was trained), or ``input_ids`` directly."""
        name = type(model).__name__
        if name not in ("CLIPModel", "SiglipModel"):
            raise CaapError(f"from_transformers takes a CLIPModel or SiglipModel, got {name}")
        with torch.no_grad():
            if input_ids is None:
                if prompts is None or tokenizer is None:
                    raise CaapError("from_transformers needs prompts and a tokenizer, or input_ids")
                groups = _groups(prompts)
                padding = "max_length" if name == "SiglipModel" else True
                text = torch.stack([F.normalize(_text_features(model, **tokenizer(g, padding=padding,
                                                                                  return_tensors="pt")), dim=-1)
                                    .mean(0) for g in groups])
                names = names or [g[0] for g in groups]
            else:
                text = _text_features(model, input_ids=input_ids, attention_mask=attention_mask)
        bias = getattr(model, "logit_bias", None)
        return cls(model, text, model.logit_scale.exp(), bias, names)


def _text_features(model: nn.Module, **inputs) -> torch.Tensor:
    out = model.get_text_features(**inputs)
    return out.pooler_output if hasattr(out, "pooler_output") else out


def _groups(prompts) -> list[list[str]]:
    if isinstance(prompts, str) or not prompts:
        raise CaapError(f"prompts must be a non-empty list of strings (or of lists of strings), got {prompts!r}")
    return [[p] if isinstance(p, str) else list(p) for p in prompts]


def is_zero_shot(model: nn.Module) -> bool:
    return isinstance(model, ZeroShot)


def is_image_text(model: nn.Module) -> bool:
    """A whole image-text model (open_clip's CLIP, a Hugging Face ``CLIPModel`` / ``SiglipModel``): its image
    tower's outputs are embedding dimensions, which become classes only through text prompts."""
    open_clip = type(model).__module__.startswith("open_clip") and hasattr(model, "encode_text")
    return open_clip or type(model).__name__ in ("CLIPModel", "SiglipModel")


def classifier(model: nn.Module, name: str, prompts: Sequence[str] | None = None,
               templates: Sequence[str] | None = None) -> nn.Module:
    """The classifier a command explains: the zero-shot classifier of ``prompts`` (:func:`zero_shot`); a whole
    image-text model without prompts is refused (its "classes" would be embedding dimensions); any other model
    as it is."""
    if prompts:
        return zero_shot(model, prompts, name, templates)
    if is_image_text(model):
        raise OptionError("prompts", f"are needed: {name!r} is an image-text model, whose outputs are embedding "
                                     "dimensions, not classes; give the classes as text (a,b,c or @FILE)")
    return model


PROMPT_FILE_SUFFIXES = (".txt", ".csv", ".tsv", ".list", ".lst")


def read_prompts(text: str) -> list[str]:
    """``--prompts``: ``@FILE`` reads a UTF-8 text file of one prompt per line (a byte-order mark is dropped);
    any other value is the prompts themselves, separated by commas. The text is never tried as a path: a value
    that only names a file (one item ending in ``.txt``, ``.csv``… or ``/``) is refused with a pointer to ``@``."""
    if not isinstance(text, str):
        raise OptionError("prompts", f"{text!r}: expected a,b,c or @FILE")
    if text.startswith("@"):
        return _prompt_file(text[1:])
    items = text.removeprefix("\ufeff").split(",")
    prompts = [p.strip() for p in items if p.strip()]
    if not prompts:
        raise OptionError("prompts", f"{text!r} holds no prompt; expected a,b,c or @FILE (one prompt per line)")
    if len(prompts) == 1 and (prompts[0].lower().endswith(PROMPT_FILE_SUFFIXES) or prompts[0].endswith(("/", "\\"))):
        raise OptionError("prompts", f"{text!r} looks like a file name, not a prompt; write @{prompts[0]} to read "
                                     "prompts from a file (one per line)")
    return prompts


def _prompt_file(name: str) -> list[str]:
    """The prompts of ``@FILE``: one per non-empty line; the file must exist, be a file and be UTF-8 text."""
    from pathlib import Path

    path = Path(name)
    if not name:
        raise OptionError("prompts", "'@' names no file; expected @FILE (one prompt per line)")
    try:
        data = path.read_bytes()
    except IsADirectoryError:
        raise OptionError("prompts", f"@{name}: is a folder; expected a text file of one prompt per line") from None
    except FileNotFoundError:
        raise OptionError("prompts", f"@{name}: no such file; expected a text file of one prompt per line") from None
    except OSError as exc:
        raise OptionError("prompts", f"@{name}: cannot read it ({exc.strerror or exc})") from None
    if b"\0" in data:
        raise OptionError("prompts", f"@{name}: is a binary file (it holds NUL bytes); expected UTF-8 text, one "
                                     "prompt per line")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise OptionError("prompts", f"@{name}: is not UTF-8 text (byte {data[exc.start]:#04x} at offset "
                                     f"{exc.start}); save it as UTF-8") from None
    prompts = [p.strip() for p in text.splitlines() if p.strip()]
    if not prompts:
        raise OptionError("prompts", f"@{name} holds no prompt; expected one per line")
    return prompts


def read_templates(text: str) -> list[str]:
    """``--templates``: ``;``-separated templates, each with one ``{}`` (:func:`check_template`); at least one."""
    templates = [t.strip() for t in text.removeprefix("\ufeff").split(";") if t.strip()]
    if not templates:
        raise OptionError("templates", f"{text!r} holds no template; expected e.g. 'a photo of a {{}}.;a {{}}.'")
    return [check_template(t) for t in templates]


def zero_shot(model: nn.Module, prompts: Sequence[str], name: str, templates: Sequence[str] | None = None) -> ZeroShot:
    """The classifier of ``prompts`` for an image-text ``model`` loaded by ``name``: its own tokenizer (open_clip's
    for ``open_clip:`` names, the folder's for a Hugging Face CLIP / SigLIP). With ``templates`` the prompts are
    class names, each averaged over the templates (CLIP's prompt ensembling)."""
    groups = prompts_for(prompts, templates) if templates else [[p] for p in prompts]
    kind = type(model).__name__
    try:
        if type(model).__module__.startswith("open_clip") and hasattr(model, "encode_text"):
            import open_clip

            spec = name.split(":", 1)[1] if name.startswith("open_clip:") else name
            arch = spec if spec.startswith("local-dir:") else spec.split(":")[0]
            return ZeroShot.from_open_clip(model, groups, open_clip.get_tokenizer(arch), names=list(prompts))
        if kind in ("CLIPModel", "SiglipModel"):
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(model.name_or_path, local_files_only=True)
            return ZeroShot.from_transformers(model, groups, tokenizer, names=list(prompts))
    except CaapError:
        raise
    except Exception as exc:  # tokenizer files missing offline, and the like
        raise OptionError("prompts", f"need the model's tokenizer, which could not be loaded ({type(exc).__name__}: "
                                     f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
    raise OptionError("prompts", f"apply to an image-text model (open_clip:ARCH, a CLIP or SigLIP folder), not "
                                 f"{name!r} ({kind})")
