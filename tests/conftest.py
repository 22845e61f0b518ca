"""Hermetic test sessions: a private dataset cache, W&B offline, and few CPU threads."""

import os

import pytest
import torch


@pytest.fixture(scope="session", autouse=True)
def _isolated_environment(tmp_path_factory):
    # Set before any Ray cluster starts so that trial workers inherit it.
    os.environ["NSM_DATA_DIR"] = str(tmp_path_factory.mktemp("nsm-data-cache"))
    os.environ["WANDB_MODE"] = "offline"
    os.environ.setdefault("WANDB_SILENT", "true")
    torch.set_num_threads(2)
    yield
