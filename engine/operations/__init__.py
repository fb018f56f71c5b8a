"""Cluster operations — install, expand, upgrade — built from plans/*.yaml templates over the
manifest and the inventory, then driven by the same engine as any plan.
"""
