"""The four workloads of the design card, each with a seeded synthetic input generator.

These modules are Dagster definitions (they belong to the Dagster layer); the generators in
``synthetic.py`` are plain pandas and usable on their own.
"""
