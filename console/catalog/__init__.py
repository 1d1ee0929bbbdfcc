"""What can run, where and under which rule: the config model and loader, params, templates, policy."""
