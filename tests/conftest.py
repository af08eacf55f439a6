"""Shared fixtures: small chip configs and helpers to build programs from assembly."""

from __future__ import annotations

import os
import sys

import pytest

import lpu

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def small() -> lpu.ChipConfig:
    return lpu.ChipConfig("tsp_small")


@pytest.fixture
def v1() -> lpu.ChipConfig:
    return lpu.ChipConfig("tsp_v1")
