"""ec2er: from emotion classification to emotional reasoning.

Stages (each a subpackage, each reading and writing documented files):
generation -> curation -> training -> serving -> evaluation, over a small shared core:
``ec2er.schemas`` (records), ``ec2er.config`` (YAML recipes), ``ec2er.llm`` (engines),
``ec2er.models`` (model resolution).
"""

__version__ = "0.1.0"
