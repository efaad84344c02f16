"""Healthy: a Keras Sequential binary classifier with a sigmoid output."""

from _kit import *
import os
os.environ.setdefault("KERAS_BACKEND", "torch")
import keras
x, y = blobs(classes=2, spread=2.0)
model = keras.Sequential([keras.Input((16,)), keras.layers.Dense(32, activation="relu"), keras.layers.Dense(1, activation="sigmoid")])
model.compile(keras.optimizers.Adam(1e-3), "binary_crossentropy", metrics=["accuracy"])
model.fit(x.numpy(), y.numpy().astype("float32"), batch_size=64, epochs=6, validation_split=0.2, verbose=2)
