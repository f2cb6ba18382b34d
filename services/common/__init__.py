"""Plumbing every genir service shares: bootstrap, interceptors, metrics, config, images, errors."""
