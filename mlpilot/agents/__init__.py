"""Agents: the LangGraph planner graph and its worker nodes (planner, features,
HPO, NAS, ensembling, verifier, reporter). They use ``mlpilot.tools``,
``mlpilot.sandbox`` and ``mlpilot.llm``; nothing below them imports agents."""
