"""Airflow loads this file from the plugins folder: the partitions view (`wap.ui`)."""

from wap.ui import WapUiPlugin

__all__ = ["WapUiPlugin"]
