"""Numbers and names that several modules, scripts and tests share; each is written here only.

Imports nothing, so that any module (core, DALI side, scripts, tests) may import it.
"""

#: ImageNet's per-channel mean and standard deviation (RGB, on the 0..1 scale): every pipeline output
#: is ``(x / 255 - IMAGENET_MEAN) / IMAGENET_STD``, about [-2.12, 2.64].
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: The ImageNet evaluation convention: resize the shorter side to 256, centre crop 224; as a ratio
#: (resized shorter side / crop edge) it scales to any crop size.
IMAGENET_RESIZE = 256 / 224

#: Colour photos that scikit-image ships inside its wheel (no download needed), the source of the
#: demo's data set, the benchmarks' generated JPEGs and the tests' images. The first four are the
#: smallest set used where fewer distinct photos suffice (demo classes, test crops).
SAMPLE_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field",
                 "retina", "motorcycle_left")

#: Largest decoded mixing set a training pipeline keeps in memory by default (``mixing_cache=None``):
#: 4 GiB holds about 21,000 pictures at 256 x 256 (PixMix's fractals: about 14,000).
MIXING_CACHE_MAX_BYTES = 4 * 2**30
