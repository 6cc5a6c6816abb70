"""The model and its loading: SD3 components (hub, local or built small), LoRA adapters, trained variants on disk."""
