"""Evaluation: the MLE-style task suite with hidden test labels and graders, the
Bayesmark HPO benchmark, and the LLM feature-operator audit."""
