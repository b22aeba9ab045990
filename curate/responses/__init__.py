"""Labels that are responses: the learner, scorers, annotators and export that the SFT and
distillation paradigm share (a model fine-tuned round by round on bought answers)."""

from curate.responses.export import response_dataset
from curate.responses.learner import Answer, ResponseLearner, SelfTraining
from curate.responses.teacher import RecordedTeacher, TeacherAnnotator
from curate.responses.uncertainty import MEASURES, AnswerUncertainty, semantic_dispersion

__all__ = ["MEASURES", "Answer", "AnswerUncertainty", "RecordedTeacher", "ResponseLearner", "SelfTraining",
           "TeacherAnnotator", "response_dataset", "semantic_dispersion"]
