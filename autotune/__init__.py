"""autotune: search-based auto-tuning of small language models.

Fine-tune (LoRA/QLoRA with peft) -> merge -> ONNX build (onnxruntime-genai model builder) ->
evaluate on the target execution provider, once or as an Optuna study with Pareto selection.
"""

from autotune.api import StudyResult, run
from autotune.config import RunConfig
from autotune.config_checks import load_config
from autotune.errors import ConfigError, DataError, ModelError, UserError

__all__ = ["ConfigError", "DataError", "ModelError", "RunConfig", "StudyResult", "UserError", "load_config", "run"]
__version__ = "0.1.0"
