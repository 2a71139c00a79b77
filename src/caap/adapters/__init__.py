"""Adapters: the only code that knows model internals. ``adapt(model)`` picks one automatically; an adapter is
the core contract (:class:`Adapter`) plus the capabilities it declares (:mod:`caap.adapters.capabilities`) and
the model's card (:class:`ModelCard`); ``create_model(name)`` builds a timm model, a Hugging Face model (folder
or ``hf-hub:``) or an embedded demo model by name; ``model_data_config`` / ``model_transform`` give its own
preprocessing."""

from caap.adapters.auto import adapt
from caap.adapters.base import Adapter, GenericAdapter
from caap.adapters.capabilities import AttentionCapture, BlockViews, FastPaths, LinearRules, require
from caap.adapters.card import ModelCard
from caap.adapters.classifier import ClassifierAdapter
from caap.adapters.eva import TimmEvaAdapter
from caap.adapters.hf import HFViTAdapter
from caap.adapters.hfclip import HFImageTowerAdapter
from caap.adapters.openclip import OpenCLIPAdapter
from caap.adapters.timm import TimmViTAdapter
from caap.adapters.weights import load_state_dict
from caap.adapters.zeroshot import ZeroShot, classifier, prompts_for, read_prompts, read_templates, zero_shot
from caap.adapters.zoo import create_model, model_data_config, model_transform

__all__ = ["Adapter", "AttentionCapture", "BlockViews", "ClassifierAdapter", "FastPaths", "GenericAdapter",
           "HFImageTowerAdapter", "HFViTAdapter", "LinearRules", "ModelCard", "OpenCLIPAdapter", "TimmEvaAdapter",
           "TimmViTAdapter", "ZeroShot", "adapt", "classifier", "create_model", "load_state_dict", "model_data_config",
           "model_transform", "prompts_for", "read_prompts", "read_templates", "require",
           "zero_shot"]
