"""Linear probes of hidden states, with the controls that make them mean something.

A probe asks whether a property of the input (a label per text) can be read off a layer's
hidden state by a linear classifier. High probe accuracy alone says little: a linear
classifier on a wide enough representation decodes many things, and a randomly initialised
network already carries a lot of information about its input. So every probe here comes
with its controls (Hewitt & Liang 2019; LLM.md section 2.3):

* **majority class**: the accuracy of always answering the training part's commonest label;
* **random-init model**: the same probe on the same layer of a freshly initialised copy of
  the model (same architecture): what the architecture gives without training;
* **control task**: labels that are a fixed random function of each document's first
  content word type, drawn from the task's label distribution. A probe that reaches high
  accuracy on it is memorising word identity; *selectivity* = task accuracy - control
  accuracy.

Train and test parts are split **by document** (``groups``), so that no document is on both
sides; the probe is an L2 logistic regression on features standardised with training-part
statistics, its ``C`` chosen by 5-fold cross-validation inside the training part (also by
document). Accuracy and, for two classes, AUROC come with percentile bootstrap intervals
over the test part (resampling documents, not rows, when documents are given).
"""

from __future__ import annotations

from xai_sandbox.text.probing.data import (
    control_task_labels,
    document_split,
    hidden_states,
    randomly_initialised,
)
from xai_sandbox.text.probing.fit import probe, probe_explanation, probe_layers
from xai_sandbox.text.probing.results import DEFAULT_CS, Pool, ProbeReport, ProbeResult

__all__ = [
    "DEFAULT_CS",
    "Pool",
    "ProbeReport",
    "ProbeResult",
    "control_task_labels",
    "document_split",
    "hidden_states",
    "probe",
    "probe_explanation",
    "probe_layers",
    "randomly_initialised",
]
