"""Upper bounds on every size a params value, a checkpoint or a command-line flag can ask for.

Each is the largest value that is still a sane request, with its reason: a larger one would fail
late, with an allocation error, a hang or a crash, rather than do more useful work. They are
checked where the value is read (config.py, specs.py, checkpoint.py, cli.py), before anything is
allocated.
"""

# Data and training:
MAX_IMAGE_SIZE = 1024        # px: 4.7x the study's largest input (224); memory grows with its square
MAX_BATCH = 65536            # images per batch: a full CIFAR-10 epoch in 1 step is already 45,000
MAX_EPOCHS = 10000           # 330x the study's 30-epoch schedule
MAX_PROCESSES = 1024         # torchrun processes per node: more than any machine has GPUs or cores
MAX_SEED = 2**32 - 1         # numpy's seeds are 32-bit; torch's 64-bit seed space is not needed
MAX_PAD = 256                # px of padding around a training image (it must also be < image_size)
MAX_CLASSES = 100_000        # a checkpoint's head: ImageNet-21k has 21,841; 100,000 at 512 features is 200 MB

# A network's shape (params.yaml's models, and the spec inside a checkpoint): several times what
# torchvision's largest ResNet or MobileNetV2 uses (2048 channels, 36 blocks in a stage, a 7x7 stem).
MAX_CHANNELS = 8192
MAX_BLOCKS = 128       # blocks per stage, and stages or stem convs per network
MAX_KERNEL = 15
MAX_STRIDE = 8
MAX_WIDTH_MULT = 8.0
