"""Turn an original Qwen3(-VL)-Reranker into a one-logit seq-cls checkpoint, streaming: its score
``sigmoid(logit(yes) - logit(no))`` is that of one head, ``score.weight = W[yes] - W[no]``, which vLLM
serves with ``--runner pooling`` alone. No model (nor torch) is loaded: headers are parsed (``_reading``),
the output decided (``_conversion_plan``), bytes copied by the kernel (``_writing``), then read back
(``_verify``).
"""

from ._convert import convert_checkpoint, verify_conversion
from ._verify import VerificationResult

__all__ = ["VerificationResult", "convert_checkpoint", "verify_conversion"]
