"""What each workflow job does with a shard of patients: one module per stage.

A shard is a list of patients (:func:`featreg.experiment.splits.shard_patients`:
consecutive patients in sorted order, so appending patients changes only the last
shard and adds new ones). Every job pays its start-up once for the whole shard,
writes one output per patient and finally a manifest (the job's declared output)
recording each patient's status. :mod:`featreg.jobs.resume` holds what they share:
a patient whose output is current is not redone, so a killed job resumes where it
stopped, and one bad patient fails alone, with its reason in the manifest and
downstream in its ``run.json`` and metrics row.
"""
