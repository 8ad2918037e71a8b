"""The paper's story end to end: the demo (its stages and reports) and the experiment (the paper's table as a resumable run)."""
