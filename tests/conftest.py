"""Suite-wide test settings.

The tests run tiny problems, where torch's intra-op threads cost more than they bring (and on a
loaded machine a 2-thread step waits for the other thread's core): one thread per process.
"""

import torch

torch.set_num_threads(1)
