"""Pure planning: pairing desired with live objects, sync options, hooks, ordering and waves."""
