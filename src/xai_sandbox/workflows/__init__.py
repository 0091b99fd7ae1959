"""The application layer: the use cases, as functions over a :class:`Context`.

Register a model (:mod:`.register`), decide (:mod:`.decide`), explain a decision or an
ad hoc input (:mod:`.explain`), run a job (:mod:`.jobs`), build the subject view
(:mod:`.subject`), request a review (:mod:`.reviews`), read the full report
(:mod:`.reading`), verify the log (:mod:`.verify`). The service, the CLI and batch
workers call these; nothing in the library below imports this package. :class:`Decider`
bundles them as methods of one object.
"""

from xai_sandbox.reports.report import REPORT_SCHEMA, Report
from xai_sandbox.workflows.context import Context
from xai_sandbox.workflows.decider import Decider
from xai_sandbox.workflows.reviews import add_working_days
from xai_sandbox.workflows.served import DecisionOutcome, ServedModel

__all__ = [
           "REPORT_SCHEMA",
           "Context",
           "Decider",
           "DecisionOutcome",
           "Report",
           "ServedModel",
           "add_working_days",
]
