"""CIFAR-10 pipeline stages; each module is one stage of dvc.yaml, run as `python -m stages.NAME`."""
