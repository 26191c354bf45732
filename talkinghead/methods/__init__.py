"""The methods, one sub-package each (networks, `StagedModule` subclass, config schema, generator,
official checkpoint import, bench rows), each declared once in its ``method.py`` and listed in
`talkinghead.methods.registry` (``get_method("pcavs")``). A method never imports another; this
package imports nothing itself, so a method's dependencies load only when it is used.
"""
