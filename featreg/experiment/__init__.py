"""A validated config expanded into what the workflow runs.

``methods`` (the method model and table), ``splits`` (patients and shards),
``tuning`` (the tuning protocol), ``method_file`` and ``selection_record`` (their
on-disk formats) and ``plan`` (:class:`~featreg.experiment.plan.ExperimentPlan`, the
one object the Snakefile reads).
"""
