"""ApplicationSets: expand one ApplicationSet document into the Application documents it generates.

`generate()` runs the generators (list, clusters, git, matrix, merge) and renders the template
in Argo CD's fasttemplate or Go-template form; git is read through an injected `GitReader`.
"""

from daemon.appset.generators import (
    APPSET_ANNOTATION,
    GenerationError,
    GitReader,
    ParamSet,
    generate,
    merge_template,
    preserve_resources_on_deletion,
    selector_matches,
)
from daemon.appset.template import TemplateError, normalize, render_string, render_template

__all__ = [
    "APPSET_ANNOTATION",
    "GenerationError",
    "GitReader",
    "ParamSet",
    "TemplateError",
    "generate",
    "merge_template",
    "normalize",
    "preserve_resources_on_deletion",
    "render_string",
    "render_template",
    "selector_matches",
]
