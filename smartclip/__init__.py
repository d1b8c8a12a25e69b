"""SmartCLIP: masked modular vision-language alignment, from synthetic worlds to open_clip."""
