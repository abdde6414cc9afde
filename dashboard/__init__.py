"""The bench dashboard (Streamlit) and the static HTML report.

Read-only: it opens the results database read-only and imports neither torch nor the
``plugins`` package. Queries (:mod:`dashboard.queries`) and the Pareto front
(:mod:`dashboard.pareto`) are pure functions on DataFrames.
"""
