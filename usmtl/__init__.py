"""usmtl: multi-task CNN for breast ultrasound.

Reimplements Li C., Guo Y. et al., "A Convolutional Neural Network Based on Ultrasound
Images of Primary Breast Masses: Prediction of Lymph-Node Metastasis in Collaboration With
Classification of Benign and Malignant Tumors", Front. Physiol. 13:882648 (2022).

Importing this package does not import TensorFlow; the modules that need it do.
"""

__version__ = "0.1.0"
