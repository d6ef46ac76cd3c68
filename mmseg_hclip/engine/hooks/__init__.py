
from .vocabulary_hook import VocabularyHook  # noqa: F401
from .hyperspherical_energy_hook import HypersphericalEnergyHook  # noqa: F401
from .matmul_precision_hook import Float32MatmulPrecisionHook  # noqa: F401
from .model_settings_hook import ModelSettingsHook  # noqa: F401
from .cpu_allocator_hook import CPUAllocatorHook  # noqa: F401
