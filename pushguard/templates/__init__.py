"""Message templates: Jinja2 in a sandbox, versioned per locale, linted before they are used.

* :mod:`~pushguard.templates.content` -- what a template holds per channel, and locales;
* :mod:`~pushguard.templates.store` -- the ``templates`` and ``template_versions`` tables;
* :mod:`~pushguard.templates.worker` -- the sandbox, run in child processes;
* :mod:`~pushguard.templates.pool` -- those processes, with a time and size limit per render;
* :mod:`~pushguard.templates.render` -- a template plus a contact and data, into content;
* :mod:`~pushguard.templates.variables` -- which variables a template reads (static analysis);
* :mod:`~pushguard.templates.linkcheck` -- links and images checked over HTTP, SSRF-guarded;
* :mod:`~pushguard.templates.lint` -- every problem a template has, with where and how to fix;
* :mod:`~pushguard.templates.service` -- what the HTTP API and the CLI call;
* :mod:`~pushguard.templates.models` -- their request bodies;
* :mod:`~pushguard.templates.errors` -- ``TemplateError`` (cause TEMPLATE_ERROR), ``LintRefused``.

Nothing is imported here: the render worker imports this package, and it must start fast.
"""
