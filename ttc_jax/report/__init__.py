"""The run report: report.md, PNG figures and the claims table."""
from ttc_jax.report.report import write_report
