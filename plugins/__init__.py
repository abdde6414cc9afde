"""Built-in technique plugins, registered through the same hooks as third-party ones."""
