"""Plug-ins written the way README's "Add your own source, sink or transform" shows them."""
