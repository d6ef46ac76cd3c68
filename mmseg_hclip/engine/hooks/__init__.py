
from .vocabulary_hook import VocabularyHook  # noqa: F401
