-- Full mode: rebuild the analytic table from scratch from the landing tables.
TRUNCATE analytic.medical_record_denormalized;
INSERT INTO analytic.medical_record_denormalized (
    row_key, patient_id, id_card_num, passport_country, passport_number, first_name, last_name, birth_date, phone_num,
    medical_record_id, hospital_name, doctor_full_name, diagnosis, symptom,
    treatment_start_date, treatment_end_date, prescription_id, medicine_name, dose,
    patient_updated_timestamp, medical_record_updated_timestamp, prescription_updated_timestamp, row_hash
)
SELECT row_key, patient_id, id_card_num, passport_country, passport_number, first_name, last_name, birth_date, phone_num,
       medical_record_id, hospital_name, doctor_full_name, diagnosis, symptom,
       treatment_start_date, treatment_end_date, prescription_id, medicine_name, dose,
       patient_updated_timestamp, medical_record_updated_timestamp, prescription_updated_timestamp, row_hash
FROM analytic.medical_record_denormalized_source;
