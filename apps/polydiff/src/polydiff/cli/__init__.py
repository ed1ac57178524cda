"""The umbrella `polydiff` command."""
