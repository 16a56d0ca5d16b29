"""Run inside an older TensorFlow's venv: load a SavedModel as a serving image would and call serving_default.

python serve.py SAVEDMODEL_DIR IMAGES.npy OUT.npy
"""

import sys

import numpy as np
import tensorflow as tf

saved, images, out = sys.argv[1:4]
model = tf.saved_model.load(saved)
serve = model.signatures["serving_default"]
result = serve(image=tf.constant(np.load(images), tf.uint8))
np.save(out, result["probabilities"].numpy())
print(tf.__version__)
