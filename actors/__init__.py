"""The CEM planner, the Actor (environment loop + model copy + planner) and the evaluator."""
