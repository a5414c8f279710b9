"""Start vLLM with the flags a Qwen3-Reranker checkpoint needs: a pure launch plan, then a process.

:func:`plan_launch` turns a checkpoint's ``config.json``, the machine (:func:`read_cpu_info`) and
the user's own flags into a :class:`LaunchPlan`; :class:`VLLMServer` runs it, waits for
``/health``, checks real scores, and stops the whole process group on exit.
"""

from ._cpu import CpuInfo, read_cpu_info
from ._plan import LaunchPlan, plan_launch
from ._server import SERVER_PYTHON_ENV, VLLMServer, read_checkpoint_config
from ._vllm_args import VLLM_API_KEY_ENV

__all__ = [
    "SERVER_PYTHON_ENV",
    "VLLM_API_KEY_ENV",
    "CpuInfo",
    "LaunchPlan",
    "VLLMServer",
    "plan_launch",
    "read_checkpoint_config",
    "read_cpu_info",
]
