"""Studies and benchmarks that measure amc itself: does the score a search climbs predict what users
get (:mod:`benchmarks.fidelity`)? Each writes JSON, a markdown table and figures, resumes where it
stopped, and records the machine's load."""
