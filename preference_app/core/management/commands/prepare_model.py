import time

from django.core.management.base import BaseCommand, CommandError

from preference_app.core.model_store import prepare_bundled_model
from training.checkpoints import ModelUnavailable


class Command(BaseCommand):
    help = "Convert the bundled SmolLM2-135M-Instruct GGUF once into a safetensors checkpoint under MODELS_DIR."

    def add_arguments(self, parser):
        parser.add_argument("--force", action="store_true", help="Convert again even if the checkpoint exists.")

    def handle(self, *args, force: bool, **options):
        started = time.perf_counter()
        try:
            path = prepare_bundled_model(force=force)
        except ModelUnavailable as error:
            raise CommandError(str(error)) from None
        self.stdout.write(f"Model ready in {path} ({time.perf_counter() - started:.1f} s).")
