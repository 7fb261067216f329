"""Pictures and documents made from reports: PNG charts (matplotlib, Agg) and the audit's HTML page."""
