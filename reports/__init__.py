"""Figures and the reproduction report, made from results/ alone (never by re-running)."""
