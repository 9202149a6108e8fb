"""What runs show a person: text tables and plots (plots need matplotlib, imported lazily)."""

from fitnets_tf.reporting.tables import format_table

__all__ = ["format_table"]
