"""Built-in primitive ops. Importing this package registers them all (see ``graphopt.ir.registry``).

Each module groups ops by kind; every implementation uses only ``torch``, ``torch.nn.functional as F``,
``math`` and the helpers in ``_rt`` so that the PyTorch backend can copy its source into standalone modules.
"""

from . import choice, elementwise, extra, nn, reduce, rnn, tensor, torch_extra  # noqa: F401
