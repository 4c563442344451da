"""satc's model zoo: plain torch models with a registry and size/MAC counters."""

from satc.models.registry import ZOO, ModelSpec, get_model, get_spec, list_models
from satc.models.stats import count_macs, count_params, layer_macs

__all__ = ["ZOO", "ModelSpec", "count_macs", "count_params", "get_model", "get_spec",
           "layer_macs", "list_models"]
