"""Marketplace: a GPU offer catalog across clouds and owned pools, an optimizer that ranks
offers for a JobSpec (pricing spot interruption risk), and cost estimates that record the
price they used.

Everything here is pure Python over plain data except `providers/` (cloud SDKs, imported
lazily) and `refresh` (which writes the user catalog file).
"""
