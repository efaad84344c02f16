"""Healthy: a Keras 3 functional model (torch backend) ending in Dense(activation="softmax")."""

from _kit import *
import os
os.environ.setdefault("KERAS_BACKEND", "torch")
import keras
x, y = blobs()
inp = keras.Input((16,))
h = keras.layers.Dense(64, activation="relu")(inp)
h = keras.layers.Dense(64, activation="relu")(h)
out = keras.layers.Dense(4, activation="softmax")(h)
model = keras.Model(inp, out)
model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
model.fit(x.numpy(), y.numpy(), batch_size=64, epochs=6, validation_split=0.2, verbose=2)
