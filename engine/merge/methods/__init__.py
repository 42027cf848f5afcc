"""The merge methods, one module each: a module named after its method exports `METHOD`, the frozen
`MergeMethod` (engine/merge/declaration.py) that binds the method's kernels (kept in engine/merge/) to its
declared parameters, selection, cached parts, keep panel and Compare grid. `engine/merge/registry.py` finds
every module here (modules named with a leading underscore hold what several share); adding a method is
adding its module, no other file."""
